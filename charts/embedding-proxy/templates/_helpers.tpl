{{/* Chart name, possibly overridden. */}}
{{- define "embedding-proxy.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Resource name prefix: the release name, with the chart name added unless already in it. */}}
{{- define "embedding-proxy.fullname" -}}
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

{{- define "embedding-proxy.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Standard labels on every object. */}}
{{- define "embedding-proxy.labels" -}}
helm.sh/chart: {{ include "embedding-proxy.chart" . }}
{{ include "embedding-proxy.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: embedding-proxy
{{- end }}

{{- define "embedding-proxy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "embedding-proxy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The operator's labels: standard ones plus its component. */}}
{{- define "embedding-proxy.operator.labels" -}}
{{ include "embedding-proxy.labels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "embedding-proxy.operator.selectorLabels" -}}
{{ include "embedding-proxy.selectorLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "embedding-proxy.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "embedding-proxy.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "embedding-proxy.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "embedding-proxy.peeringName" -}}
{{- default (include "embedding-proxy.fullname" .) .Values.operator.peering.name }}
{{- end }}

{{/* Namespaces watched in namespaced mode, as a JSON list (default: the release namespace). */}}
{{- define "embedding-proxy.watchedNamespaces" -}}
{{- if .Values.operator.watch.namespaces }}
{{- .Values.operator.watch.namespaces | uniq | toJson }}
{{- else }}
{{- list .Release.Namespace | toJson }}
{{- end }}
{{- end }}

{{- define "embedding-proxy.clusterWide" -}}
{{- if eq .Values.operator.watch.mode "cluster" }}true{{ end }}
{{- end }}

{{/*
RBAC rules for what the operator does inside a watched namespace. Used by the ClusterRole in
cluster-wide mode and by one Role per namespace in namespaced mode.
*/}}
{{- define "embedding-proxy.namespacedRules" -}}
# Its own resource: reconcile, then report in status.
- apiGroups: ["embeddingproxy.io"]
  resources: ["embeddingproxies"]
  verbs: ["get", "list", "watch", "patch", "update"]
- apiGroups: ["embeddingproxy.io"]
  resources: ["embeddingproxies/status"]
  verbs: ["get", "patch", "update"]
# The target Deployment: inject the sidecar; scale it on the proxies' queue depth.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "patch", "update"]
- apiGroups: ["apps"]
  resources: ["deployments/scale"]
  verbs: ["get", "patch", "update"]
# The proxies' config, which they reload live.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
# Ready pods, whose /metrics it scrapes.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
# Explaining what happened, in both Event APIs.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
# An HPA on the target is only read, so that the operator never fights it.
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "watch"]
# KEDA, when chosen for autoscaling, gets a ScaledObject the operator owns.
- apiGroups: ["keda.sh"]
  resources: ["scaledobjects"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
{{- end }}
