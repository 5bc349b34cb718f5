{{/*
Helpers of the l7scope chart. Rendered by Helm, or by tools/chartrender (the same engine:
text/template + sprig + Helm's functions) for deploy/install.yaml and the tests.
*/}}

{{/* The chart's name, or nameOverride. */}}
{{- define "l7scope.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's base name: fullnameOverride, else the release name when it contains the chart's
name, else <release>-<name>; 55 characters at most, so "<fullname>-operator" fits in 63.
*/}}
{{- define "l7scope.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 55 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 55 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 55 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The operator's objects (ServiceAccount, roles, bindings, Deployment). */}}
{{- define "l7scope.operatorName" -}}
{{- printf "%s-operator" (include "l7scope.fullname" .) }}
{{- end }}

{{/* chart label value: <name>-<version>, "+" replaced (not allowed in a label). */}}
{{- define "l7scope.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The standard labels of every object of the release. */}}
{{- define "l7scope.labels" -}}
helm.sh/chart: {{ include "l7scope.chart" . }}
app.kubernetes.io/name: {{ include "l7scope.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: l7scope
{{- end }}

{{/* The operator's labels: the standard ones and its component. */}}
{{- define "l7scope.operatorLabels" -}}
{{ include "l7scope.labels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{/* What the operator's Deployment selects its pods by (never changes after install). */}}
{{- define "l7scope.operatorSelectorLabels" -}}
app.kubernetes.io/name: {{ include "l7scope.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* The image, repository:tag (tag defaults to the chart's appVersion). */}}
{{- define "l7scope.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- end }}
