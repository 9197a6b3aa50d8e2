# Source at the start of every command on the lent GPU machine (carry .device; see tools/device_bundle.py).
# Unpacks the host's source archive when the bundle holds one, installs the wheels into /tmp/site and puts
# ComfyUI on PYTHONPATH.
if [ -f .device/comfyui.tar.gz ] && [ ! -f .device/ComfyUI/main.py ]; then
  mkdir -p .device/ComfyUI && tar xzf .device/comfyui.tar.gz -C .device/ComfyUI || return 1
fi
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .device/whl/*.whl || return 1
export PYTHONPATH="/tmp/site:$PWD/.device/ComfyUI:$PYTHONPATH" PYTHONUNBUFFERED=1 COMFYUI_PATH="$PWD/.device/ComfyUI"
