{{/* The chart's name, overridable with nameOverride. */}}
{{- define "directstream.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name: the prefix of every object the chart creates. */}}
{{- define "directstream.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "directstream.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "directstream.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "directstream.selectorLabels" -}}
app.kubernetes.io/name: {{ include "directstream.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "directstream.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "directstream.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: directstream
{{- end -}}

{{- define "directstream.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "directstream.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository[:tag][@digest]; the tag defaults to the appVersion. Argument: (dict "image" ... "root" $). */}}
{{- define "directstream.imageRef" -}}
{{- $image := .image -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository (default .root.Chart.AppVersion $image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The watched namespaces as a JSON list: watchNamespaces, or the release namespace when it is empty. */}}
{{- define "directstream.watchNamespaces" -}}
{{- toJson (default (list .Release.Namespace) .Values.watchNamespaces) -}}
{{- end -}}

{{/* The namespaces that get the executor ServiceAccount, as a JSON list. */}}
{{- define "directstream.executorNamespaces" -}}
{{- if .Values.clusterWide -}}
{{- toJson (list .Release.Namespace) -}}
{{- else -}}
{{- include "directstream.watchNamespaces" . -}}
{{- end -}}
{{- end -}}

{{/* Cluster-scoped objects are shared by every release: their names include the release namespace. */}}
{{- define "directstream.clusterName" -}}
{{- printf "%s-%s" .Release.Namespace (include "directstream.fullname" .) -}}
{{- end -}}

{{/* The leader election Lease: its name and namespace. */}}
{{- define "directstream.leaseName" -}}
{{- default (include "directstream.fullname" .) .Values.leaderElection.leaseName -}}
{{- end -}}

{{- define "directstream.leaseNamespace" -}}
{{- default .Release.Namespace .Values.leaderElection.namespace -}}
{{- end -}}
