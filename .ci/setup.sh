#!/usr/bin/env bash
# Set up jrsv-stream on a fresh Debian machine (as root): system packages, a virtual
# environment in .venv, the package and its data, train and test extras. Idempotent and quick when done.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts   # speech / singing TTS
  fluidsynth fluid-soundfont-gm sonic-pi-samples                                     # music
  timgm6mb-soundfont csound-soundfont opl3-soundfont                                 # other soundfonts: the OOD test set (data ood)
  timidity freepats avldrums.lv2-soundfont                                           # other renderers: the training music pool (data music-pool)
  fortune-mod fortunes fortunes-min wamerican                                        # licence-clean text
  sox ffmpeg libsndfile1 libportaudio2 alsa-utils libasound2-plugins                 # audio I/O, capture
  pocketsphinx-testdata tmux                                                         # real speech spot checks, viewer tests
  openssl                                                                            # TLS test certificates
  asterisk-core-sounds-en asterisk-core-sounds-en-g722                               # real prompts + transcripts (real-voices)
  codec2-examples                                                                    # real talk for the real-speech pool tests
  chromium fonts-dejavu-core                                                         # overlay page tested in headless Chromium
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
if ! .venv/bin/python -c "import jrsv_stream, torch, torchaudio, pytest" 2>/dev/null \
   || [ pyproject.toml -nt .venv/.jrsv-installed ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[data,train,test]"
  touch .venv/.jrsv-installed
fi
