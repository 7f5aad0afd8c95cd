"""`python -m modal_core` is `modal-core`."""

from modal_core.cli import main

raise SystemExit(main())
