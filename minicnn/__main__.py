from minicnn.cli import main

raise SystemExit(main())
