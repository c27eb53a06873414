{{- define "jobqueue-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "jobqueue-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "jobqueue-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "jobqueue-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "jobqueue-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "jobqueue-operator.labels" -}}
helm.sh/chart: {{ include "jobqueue-operator.chart" . }}
{{ include "jobqueue-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: jobqueue
{{- end }}

{{- define "jobqueue-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "jobqueue-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The rules of the operator's own resources: JobQueues and the children it makes. */}}
{{- define "jobqueue-operator.applicationRules" -}}
# Application: the JobQueues ...
- apiGroups: [jobqueue.dev]
  resources: [jobqueues]
  verbs: [get, list, watch, patch]
- apiGroups: [jobqueue.dev]
  resources: [jobqueues/status]
  verbs: [get, patch, update]
# ... and their children (server-side apply is "patch"; pruning is "delete").
- apiGroups: [apps]
  resources: [deployments, statefulsets]
  verbs: [get, list, watch, create, patch, update, delete]
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, watch, create, patch, update, delete]
# A PodDisruptionBudget per queue's workers (docs/operator.md, "Drains and disruptions").
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, list, watch, create, patch, update, delete]
# Secrets: the managed broker's passwords (created once; its url key rewritten from its password key when
# a user rotates it), the external broker URL and the Secrets and ConfigMaps the Pods' env reads (watched:
# their values' hash rolls the Pods when they change).
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch]
# Pods: watched so the status follows them (crash loops, image pulls) and a dead worker's tasks are put
# back at once; pod-deletion-cost set on idle workers before a scale-down; the managed Redis Pod deleted
# to restart it onto a changed template once that loses no task (its StatefulSet updates OnDelete).
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch, patch, delete]
# Events: the operator posts its own on the JobQueues (a repeated Warning raises its Event's count: list,
# patch), and reads a StatefulSet's FailedCreate Events (admission or quota refusing the Redis Pod), which
# has no condition for it.
- apiGroups: [""]
  resources: [events]
  verbs: [create, list, patch]
{{- end }}

{{/*
The monitoring objects the values enable but the cluster has no API for (comma-separated; empty: none):
the templates create each only where its monitoring.coreos.com/v1 kind is served, and NOTES.txt says
which were left out.
*/}}
{{- define "jobqueue-operator.monitoringNotCreated" -}}
{{- $asked := dict "ServiceMonitor" .Values.metrics.serviceMonitor.enabled "PodMonitor" .Values.metrics.podMonitor.enabled "PrometheusRule" .Values.prometheusRule.enabled }}
{{- $skipped := list }}
{{- range $kind, $enabled := $asked }}
{{- if and $enabled (not ($.Capabilities.APIVersions.Has (printf "monitoring.coreos.com/v1/%s" $kind))) }}
{{- $skipped = append $skipped $kind }}
{{- end }}
{{- end }}
{{- join ", " $skipped }}
{{- end }}
