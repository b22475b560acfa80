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

{{/*
The name of an object named after another (`base`) and what it is for (`suffix`), at most 63
characters (a Service's limit, and a label value's): "<base>-<suffix>" where that fits; else the
base cut short (and a "-" it then ends in dropped), then 8 characters of a hash of the whole name,
then the suffix. So the suffix is never cut off (a Service named like the operator's Deployment,
or like another suffix, cannot happen) and two long bases that begin alike still give two names.
Called with (list base suffix).
*/}}
{{- define "embedding-proxy.suffixed" -}}
{{- $base := index . 0 }}
{{- $suffix := index . 1 }}
{{- $whole := printf "%s-%s" $base $suffix }}
{{- if le (len $whole) 63 }}
{{- $whole }}
{{- else }}
{{- $keep := sub 53 (len $suffix) | int }}
{{- if lt $keep 1 }}
{{- fail (printf "the name suffix %q is too long to share 63 characters with %q" $suffix $base) }}
{{- end }}
{{- printf "%s-%s-%s" ($base | trunc $keep | trimSuffix "-") (sha256sum $whole | trunc 8) $suffix }}
{{- end }}
{{- end }}

{{/*
A Service's name must be a DNS-1035 label (a letter first, no dots), which a name made from the
release's is not always: say so here rather than have the API server refuse the Service.
*/}}
{{- define "embedding-proxy.serviceName" -}}
{{- if not (regexMatch "^[a-z]([-a-z0-9]*[a-z0-9])?$" .) }}
{{- fail (printf "the Service name %q is not a DNS-1035 label (lower-case letters, digits and '-', beginning with a letter and at most 63 characters); it comes from the release name: set fullnameOverride to one that begins with a letter and has no dots" .) }}
{{- end }}
{{- . }}
{{- end }}

{{/* The operator's webhook Service; the operator is told this name (EMBEDDING_PROXY_OPERATOR_WEBHOOK_SERVICE). */}}
{{- define "embedding-proxy.webhookService" -}}
{{- include "embedding-proxy.serviceName" (include "embedding-proxy.suffixed" (list (include "embedding-proxy.fullname" .) "webhook")) }}
{{- end }}

{{/* The example's Deployment, Service and EmbeddingProxy. */}}
{{- define "embedding-proxy.exampleName" -}}
{{- include "embedding-proxy.serviceName" (include "embedding-proxy.suffixed" (list (include "embedding-proxy.fullname" .) .Values.example.name)) }}
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

{{/* The sidecar's image (only the proxy), and the operator's (`<repository>-operator`). */}}
{{- define "embedding-proxy.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "embedding-proxy.operatorImage" -}}
{{- $repository := default (printf "%s-operator" .Values.image.repository) .Values.image.operatorRepository }}
{{- printf "%s:%s" $repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The operator's allow list of sidecar images, comma separated; "" allows any. */}}
{{- define "embedding-proxy.allowedImages" -}}
{{- $allowed := .Values.operator.allowedImages }}
{{- if kindIs "invalid" $allowed }}{{ $allowed = list .Values.image.repository }}{{ end }}
{{- join "," $allowed }}
{{- end }}

{{- define "embedding-proxy.leaseName" -}}
{{- default (include "embedding-proxy.fullname" .) .Values.operator.leaderElection.leaseName }}
{{- end }}

{{/*
What the operator names in the pods it changes (operator/embedding_proxy_operator/names.py and
render.py): fixed there, so fixed here; tests/chart checks that the two agree.
*/}}
{{- define "embedding-proxy.sidecar.containerName" -}}embedding-proxy{{- end }}
{{- define "embedding-proxy.sidecar.metricsPortName" -}}proxy-metrics{{- end }}

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
RBAC rules for what the operator does inside a watched namespace, and nothing more: used by the
ClusterRole in cluster-wide mode and by one Role per namespace in namespaced mode. Every verb here
is one the operator or kopf sends (docs/operator.md lists why); tests/chart holds the same table,
so a new grant fails a test until both agree. `update` (PUT) is never sent: every write is a patch.
Secrets are absent on purpose: the sidecar mounts them by name, the operator never reads them.
*/}}
{{- define "embedding-proxy.namespacedRules" -}}
# Its own resource: kopf lists and watches it and patches its finalizer and annotations; the
# handlers read it afresh before acting.
- apiGroups: ["embeddingproxy.io"]
  resources: ["embeddingproxies"]
  verbs: ["get", "list", "watch", "patch"]
# Conditions, config version and pod counts: a merge patch of the status subresource.
- apiGroups: ["embeddingproxy.io"]
  resources: ["embeddingproxies/status"]
  verbs: ["patch"]
# The target Deployment: follow it, put the sidecar in (JSON Patch), take it out.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "patch"]
# The autoscaler sets the target's replicas through the scale subresource only (it reads them
# from the Deployment as its watch has it).
- apiGroups: ["apps"]
  resources: ["deployments/scale"]
  verbs: ["patch"]
# The proxies' config, which they reload live; watched (only the operator's, by label) so that
# a hand edit is put back at once.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Ready pods, whose proxies' /metrics it reads (watched: it reads them from its cache); in
# Webhook mode, pods made without the sidecar (while the webhook was not reached) are deleted so
# that their ReplicaSet makes them anew.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch", "delete"]
# Webhook mode: a pod is deleted only when its ReplicaSet is one the target Deployment controls.
- apiGroups: ["apps"]
  resources: ["replicasets"]
  verbs: ["get"]
# Explaining what happened (kopf posts core v1 Events).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
# An HPA on the same target: the autoscaler stands back rather than fight it.
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["list", "watch"]
# autoscaling.provider KEDA: a ScaledObject the operator owns.
- apiGroups: ["keda.sh"]
  resources: ["scaledobjects"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
{{- end }}

{{/* The admission webhook's configuration, which the chart creates and the operator fills in
(its CA bundle, made and renewed by the operator): that one object only, watched by name (a
list or watch with the field selector metadata.name is checked against resourceNames) so that a
change by someone else is put back at once. */}}
{{- define "embedding-proxy.webhookRules" -}}
- apiGroups: ["admissionregistration.k8s.io"]
  resources: ["mutatingwebhookconfigurations"]
  resourceNames: [{{ include "embedding-proxy.fullname" . | quote }}]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}

{{/* The alert rule groups, as a YAML list: each rule gets alerts.labels and, with
runbookBaseUrl, a runbook link that resolves. */}}
{{- define "embedding-proxy.alertGroups" -}}
{{- $file := .Files.Get "alerts/embedding-proxy.rules.yaml" | fromYaml }}
{{- $groups := list }}
{{- range $file.groups }}
{{- $rules := list }}
{{- range .rules }}
{{- $rule := deepCopy . }}
{{- $_ := set $rule "labels" (merge (deepCopy ($rule.labels | default dict)) $.Values.alerts.labels) }}
{{- with $.Values.alerts.runbookBaseUrl }}
{{- $anchor := trimPrefix "docs/alerts.md" $rule.annotations.runbook_url }}
{{- $_ := set $rule.annotations "runbook_url" (printf "%s%s" . $anchor) }}
{{- end }}
{{- $rules = append $rules $rule }}
{{- end }}
{{- $groups = append $groups (dict "name" .name "rules" $rules) }}
{{- end }}
{{- toYaml $groups }}
{{- end }}
