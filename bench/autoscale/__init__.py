"""Autoscaling benchmark on the simulator (simulator/jobqueue_sim): the operator's autoscaler against KEDA
and a static baseline, per trace, measured against the pod bound.

Modules: __main__ (`python -m bench.autoscale --trace FILE ... --json OUT`: one trace), suite (every trace
in bench/traces, the goals checked, the KEDA frontier), frontier (the keda-tuned sweep), plot (PNG of
waiting tasks and pods), traces (writes bench/traces from jobqueue_sim.shapes), tick_cost (one operator
tick for 1,000 queues).
"""
