"""`python -m mdsdys ...` (and `torchrun -m mdsdys train ...`) runs the command line."""

import sys

from mdsdys.cli import main

sys.exit(main())
