from pinedge.core.cli import main

raise SystemExit(main())
