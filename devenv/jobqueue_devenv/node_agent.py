"""Entry point of the local node agent (`python -m jobqueue_devenv.node_agent`); the code is in `nodeagent/`."""

from jobqueue_devenv.nodeagent.agent import main

if __name__ == "__main__":
    main()
