import os
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test touches the network; set before any HF import
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from local_hub import local_hub  # noqa: F401,E402  (pytest fixture; the only way a test goes online, to 127.0.0.1)
