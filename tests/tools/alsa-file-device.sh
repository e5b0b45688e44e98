#!/usr/bin/env bash
# Make a real ALSA capture device that plays a given audio file, so that code using
# sounddevice (PortAudio) can be tested end to end on a machine with no sound card.
#
#   eval "$(tests/tools/alsa-file-device.sh speech.wav 16000)"
#   python -c 'import sounddevice as sd; print(sd.rec(16000, 16000, 1, blocking=True).std())'
#
# It converts the file to raw 16-bit mono at RATE, writes an asoundrc whose default capture
# device reads that raw file (ALSA "file" plugin over a "null" device) and prints the
# environment to export (HOME pointing at a scratch folder that holds .asoundrc). A plug
# layer converts to whatever sample format and rate the program asks for.
# Needs: libportaudio2 and sox (Debian). The device delivers zeros after the file ends.
set -euo pipefail
src=${1:?usage: alsa-file-device.sh AUDIO_FILE [RATE]}
rate=${2:-16000}
dir=$(mktemp -d -t alsa-file-device.XXXXXX)
sox "$src" -r "$rate" -c 1 -b 16 -e signed-integer -t raw "$dir/in.raw"
cat > "$dir/.asoundrc" <<ASOUND
pcm.!default { type asym; playback.pcm "jrsv_null_out"; capture.pcm "jrsv_capture" }
pcm.jrsv_capture { type plug; slave { pcm "jrsv_file_in"; format S16_LE; rate $rate; channels 1 } }
pcm.jrsv_null_out { type null }
pcm.jrsv_file_in { type file; slave.pcm "jrsv_null_cap"; file "/dev/null"; infile "$dir/in.raw"; format "raw" }
pcm.jrsv_null_cap { type null }
ASOUND
echo "export HOME='$dir' JRSV_ALSA_DEVICE_DIR='$dir'"
