"""`python -m jobqueue_devenv.nodeagent`: run the local node agent (see agent.py)."""

from jobqueue_devenv.nodeagent.agent import main

main()
