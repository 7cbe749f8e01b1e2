from eximtrack.cli import main

raise SystemExit(main())
