"""`python -m tests.soak [--minutes N]`: run the soak and print its figures."""

import sys

from tests.soak.run import main

sys.exit(main())
