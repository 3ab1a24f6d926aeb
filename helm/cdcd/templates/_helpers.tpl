{{- define "cdcd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "cdcd.fullname" -}}
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

{{- define "cdcd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cdcd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "cdcd.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "cdcd.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "cdcd.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "cdcd.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "cdcd.configMapName" -}}
{{- default (include "cdcd.fullname" .) .Values.existingConfigMap }}
{{- end }}

{{/*
The configuration file rendered from .Values.config, after the checks only the chart can make: it
parses, its checkpoints can survive a restart, and its metrics endpoint is where probes look.
*/}}
{{- define "cdcd.configFile" -}}
{{- $config := fromYaml .Values.config }}
{{- if hasKey $config "Error" }}
{{- fail (printf "config: not a YAML mapping: %s" (get $config "Error")) }}
{{- end }}
{{- range $key := list "sources" "sinks" "checkpoints" "consumers" }}
{{- if not (hasKey $config $key) }}
{{- fail (printf "config: the key %q is missing (see docs/configuration.md)" $key) }}
{{- end }}
{{- end }}
{{- $checkpoints := get $config "checkpoints" | default dict }}
{{- if eq (toString (get $checkpoints "type")) "file" }}
{{- if not .Values.persistence.enabled }}
{{- fail "config: checkpoints.type is file but persistence.enabled is false: checkpoints would be lost with the pod. Enable persistence (a StatefulSet with a PersistentVolumeClaim) or use the postgres checkpoint store" }}
{{- end }}
{{- $dir := toString (get $checkpoints "dir") }}
{{- if and (isAbs $dir) (not (hasPrefix (printf "%s/" (trimSuffix "/" .Values.persistence.mountPath)) $dir)) }}
{{- fail (printf "config: checkpoints.dir %s is not on the persistent volume: use a path under persistence.mountPath (%s) or a relative one" $dir .Values.persistence.mountPath) }}
{{- end }}
{{- end }}
{{- $listen := printf "0.0.0.0:%d" (int .Values.metrics.port) }}
{{- if hasKey $config "metrics" }}
{{- $own := toString (get (get $config "metrics" | default dict) "listen") }}
{{- if ne $own $listen }}
{{- fail (printf "config: metrics.listen is %q but must be %q (all interfaces, port metrics.port): probes and the Service connect there. Remove the metrics section to let the chart set it" $own $listen) }}
{{- end }}
{{- .Values.config }}
{{- else }}
{{- .Values.config | trimSuffix "\n" }}
metrics: {listen: "{{ $listen }}"}
{{ end }}
{{- end }}
