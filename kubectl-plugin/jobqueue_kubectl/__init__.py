"""`kubectl jobqueue`: a kubectl plugin for JobQueues (status, send, top)."""
