from minicnn.experiments.cli import main

raise SystemExit(main())
