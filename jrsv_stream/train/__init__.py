"""Training: losses (:mod:`.losses`) and the separator trainer (:mod:`.separator`,
``jrsv-stream train separator --config C``)."""
