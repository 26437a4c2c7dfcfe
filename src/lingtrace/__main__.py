from lingtrace.cli import main

raise SystemExit(main())
