"""``python -m flow_omni.cli``: the same as the ``flow-omni`` command."""

import sys

from flow_omni.cli import main

sys.exit(main())
