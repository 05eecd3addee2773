"""``python -m directstream.executor`` is the same as ``directstream-executor``."""

from .main import main

main()
