# Source at the start of every command on the lent GPU machine (carry .device; see tools/device_bundle.py).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .device/whl/*.whl || return 1
export PYTHONPATH="/tmp/site:$PWD/.device/ComfyUI:$PYTHONPATH" PYTHONUNBUFFERED=1 COMFYUI_PATH="$PWD/.device/ComfyUI"
