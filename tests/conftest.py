# HF_HUB_OFFLINE=1 is set by the repository's root conftest.py, before any HF import.
from local_hub import local_hub  # noqa: F401,E402  (pytest fixture; the only way a test goes online, to 127.0.0.1)
