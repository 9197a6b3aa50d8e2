"""`make serve`: the ComfyUI UI at http://127.0.0.1:8188 with Pyra and the demo models (Ctrl-C stops)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import ComfyServer
from host import HOST


def main() -> int:
    port = int(os.environ.get("PYRA_PORT", "8188"))
    base = HOST / "serve"
    srv = ComfyServer.start(port=port, base=base, preview="latent2rgb")
    print(f"ComfyUI with Pyra: {srv.url}  (outputs in {base / 'output'}, log {srv.log_path}; Ctrl-C stops)")
    try:
        while srv.proc.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        srv.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
