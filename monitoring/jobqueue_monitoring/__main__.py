import sys

from jobqueue_monitoring.generate import main

sys.exit(main())
