{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "fluxsupport.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name, or release-chart when the release name lacks the chart's. */}}
{{- define "fluxsupport.fullname" -}}
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

{{- define "fluxsupport.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fluxsupport.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "fluxsupport.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "fluxsupport.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: fluxsupport
{{- end }}

{{- define "fluxsupport.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "fluxsupport.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "fluxsupport.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The policy document, as mounted at /etc/fluxsupport/policy.yaml. */}}
{{- define "fluxsupport.policy" -}}
{{ toYaml .Values.policy }}
{{- end }}

{{/* The label the ServiceMonitor takes the Prometheus job name from. */}}
{{- define "fluxsupport.jobLabel" -}}
support.fluxcd.controlplane.io/scrape-job
{{- end }}
