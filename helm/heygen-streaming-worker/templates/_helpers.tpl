{{/*
Expand the name of the chart.
*/}}
{{- define "heygen-streaming-worker.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create a default fully qualified app name.
We truncate at 63 chars because some Kubernetes name fields are limited to this (by the DNS naming spec).
If release name contains chart name it will be used as a full name.
*/}}
{{- define "heygen-streaming-worker.fullname" -}}
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

{{/*
Create chart name and version as used by the chart label.
*/}}
{{- define "heygen-streaming-worker.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels
*/}}
{{- define "heygen-streaming-worker.labels" -}}
helm.sh/chart: {{ include "heygen-streaming-worker.chart" . }}
{{ include "heygen-streaming-worker.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: worker
{{- end }}

{{/*
Selector labels
*/}}
{{- define "heygen-streaming-worker.selectorLabels" -}}
app.kubernetes.io/name: {{ include "heygen-streaming-worker.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Create the name of the service account to use
*/}}
{{- define "heygen-streaming-worker.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "heygen-streaming-worker.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The Secret holding the HeyGen key, the AMQP URL and (with KEDA) the management URL.
*/}}
{{- define "heygen-streaming-worker.secretName" -}}
{{- default (include "heygen-streaming-worker.fullname" .) .Values.existingSecret }}
{{- end }}

{{/*
Pod termination grace: the worker's drain plus time for the last acks and the process exit.
*/}}
{{- define "heygen-streaming-worker.terminationGracePeriodSeconds" -}}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add (ceil .Values.config.shutdownGraceS | int) 15 }}
{{- else }}
{{- .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/*
Value combinations the schema cannot express; rendered (empty) by the Deployment so that every
install and template run checks them.
*/}}
{{- define "heygen-streaming-worker.validate" -}}
{{- $partitions := int .Values.config.partitions }}
{{- if and .Values.autoscaling.enabled .Values.keda.enabled }}
{{- fail "autoscaling.enabled and keda.enabled are mutually exclusive: two autoscalers would fight over the replica count" }}
{{- end }}
{{- if and (not .Values.autoscaling.enabled) (not .Values.keda.enabled) (gt (int .Values.replicaCount) $partitions) }}
{{- fail (printf "replicaCount (%d) exceeds config.partitions (%d): a partition has one active consumer, extra replicas would idle" (int .Values.replicaCount) $partitions) }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.maxReplicas) $partitions) }}
{{- fail (printf "autoscaling.maxReplicas (%d) exceeds config.partitions (%d)" (int .Values.autoscaling.maxReplicas) $partitions) }}
{{- end }}
{{- if and .Values.keda.enabled (gt (int .Values.keda.maxReplicaCount) $partitions) }}
{{- fail (printf "keda.maxReplicaCount (%d) exceeds config.partitions (%d)" (int .Values.keda.maxReplicaCount) $partitions) }}
{{- end }}
{{- if not .Values.existingSecret }}
{{- if not .Values.heygen.apiKey }}
{{- fail "set heygen.apiKey, or existingSecret naming a Secret with the HeyGen API key" }}
{{- end }}
{{- if and .Values.liveavatar.enabled (not .Values.liveavatar.apiKey) }}
{{- fail "liveavatar.enabled needs liveavatar.apiKey, or existingSecret with that key" }}
{{- end }}
{{- if not .Values.amqp.url }}
{{- fail "set amqp.url (e.g. amqps://heygen-worker:PASSWORD@rabbitmq:5671/avatar), or existingSecret" }}
{{- end }}
{{- if and .Values.keda.enabled (not .Values.keda.rabbitmqManagementUrl) }}
{{- fail "keda.enabled needs keda.rabbitmqManagementUrl (or existingSecret with that key)" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
A file of the chart's files/ directory, copied from deploy/ by scripts/sync-chart-files.sh;
fails the render when the copy is missing.
*/}}
{{- define "heygen-streaming-worker.requiredFile" -}}
{{- $content := .root.Files.Get .path }}
{{- if not $content }}
{{- fail (printf "%s is missing from the chart: run scripts/sync-chart-files.sh" .path) }}
{{- end }}
{{- $content }}
{{- end }}
