"""``python -m directstream.executor`` is the same as ``directstream-executor``."""

from directstream.executor.main import main

raise SystemExit(main())
