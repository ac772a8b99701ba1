"""`python -m whispersg` runs the `whispersg` command."""

import sys

from whispersg.cli.transcribe import main

sys.exit(main())
