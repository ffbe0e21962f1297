{{/* Object names: <release>-<component>. */}}
{{- define "netspectra.name" -}}
{{- printf "%s-%s" .root.Release.Name .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "netspectra.labels" -}}
app.kubernetes.io/name: {{ .component }}
app.kubernetes.io/part-of: netspectra
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{- define "netspectra.selector" -}}
app.kubernetes.io/name: {{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{- define "netspectra.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "netspectra.secretName" -}}
{{- if .Values.secrets.create -}}
{{- include "netspectra.name" (dict "root" . "component" "secrets") -}}
{{- else -}}
{{- required "secrets.existingSecret is required when secrets.create is false" .Values.secrets.existingSecret -}}
{{- end -}}
{{- end -}}

{{- define "netspectra.natsUrl" -}}
{{- if .Values.nats.enabled -}}
{{- printf "nats://%s.%s.svc:4222" (include "netspectra.name" (dict "root" . "component" "nats")) .Release.Namespace -}}
{{- else -}}
{{- required "nats.url is required when nats.enabled is false" .Values.nats.url -}}
{{- end -}}
{{- end -}}

{{- define "netspectra.clickhouseHost" -}}
{{- if .Values.clickhouse.enabled -}}
{{- include "netspectra.name" (dict "root" . "component" "clickhouse") -}}
{{- else -}}
{{- required "clickhouse.host is required when clickhouse.enabled is false" .Values.clickhouse.host -}}
{{- end -}}
{{- end -}}

{{/* Where the store is, and its account, for every role that opens it. */}}
{{- define "netspectra.storeEnv" -}}
- name: CLICKHOUSE_HOST
  value: {{ include "netspectra.clickhouseHost" . | quote }}
- name: CLICKHOUSE_HTTP_PORT
  value: {{ .Values.clickhouse.httpPort | quote }}
- name: CLICKHOUSE_DB
  value: {{ .Values.clickhouse.database | quote }}
- name: CLICKHOUSE_USER
  valueFrom:
    secretKeyRef:
      name: {{ include "netspectra.secretName" . }}
      key: CLICKHOUSE_USER
- name: CLICKHOUSE_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "netspectra.secretName" . }}
      key: CLICKHOUSE_PASSWORD
{{- end -}}

{{- define "netspectra.podSecurity" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "netspectra.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{- define "netspectra.configVolume" -}}
- name: config
  configMap:
    name: {{ include "netspectra.name" (dict "root" . "component" "config") }}
{{- end -}}
