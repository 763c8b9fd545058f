from shard_manager.cli import main

raise SystemExit(main())
