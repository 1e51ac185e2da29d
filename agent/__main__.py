"""`python -m agent` is the same as the `devops-agent` console script."""

from agent.cli.main import main

raise SystemExit(main())
