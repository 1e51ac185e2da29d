"""`python -m agent.demo`: the end-to-end demo (what `make demo` runs)."""

from agent.demo.run import main

raise SystemExit(main())
