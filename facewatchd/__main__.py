from facewatchd.cli import main

raise SystemExit(main())
