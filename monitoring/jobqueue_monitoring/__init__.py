"""The monitoring side of jobqueue-operator as code: Grafana dashboards, Prometheus alert rules and their
runbooks, written once here and generated into the Helm chart and docs/ (`make monitoring`)."""
