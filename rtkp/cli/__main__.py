from rtkp.cli import main

raise SystemExit(main())
