"""`python -m agent` is the same as the `devops-agent` console script."""

from agent.cli import main

raise SystemExit(main())
