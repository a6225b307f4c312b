{{- define "pipesentry.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "pipesentry.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "pipesentry.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "pipesentry.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "pipesentry.component" -}}
{{- if eq .Values.mode "sidecar" }}sidecar{{ else }}consumer{{ end -}}
{{- end -}}

{{- define "pipesentry.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pipesentry.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: {{ include "pipesentry.component" . }}
{{- end -}}

{{- define "pipesentry.testSelectorLabels" -}}
app.kubernetes.io/name: {{ include "pipesentry.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: test
{{- end -}}

{{- define "pipesentry.labels" -}}
{{ include "pipesentry.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "pipesentry.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{/* The settings file: chart defaults, then the sidecar's file input, then .Values.config. */}}
{{- define "pipesentry.config" -}}
{{- $defaults := dict
      "data_dir" "/var/lib/pipesentry"
      "api" (dict "host" "0.0.0.0" "port" (int .Values.service.port))
      "stdin" (dict "enabled" false)
      "rules" (dict "paths" (list "/opt/pipesentry/share/pipesentry/sigma-rules" "/etc/pipesentry/rules")) -}}
{{- if eq .Values.mode "sidecar" -}}
{{- $file := dict "path" (printf "%s/%s" .Values.sidecar.logDir .Values.sidecar.logFile) "start_at" "beginning" "logsource" .Values.sidecar.logsource -}}
{{- $_ := set $defaults "files" (list $file) -}}
{{- $_ := set $defaults "http_ingest" (dict "enabled" true "logsource" .Values.sidecar.logsource) -}}
{{- else -}}
{{- $_ := set $defaults "http_ingest" (dict "enabled" false) -}}
{{- /* keyed scope: exact correlations across partitions and instances (docs/scaling.md); the internal
       topic is named after the consumer group, so two releases never share one. Snapshots go to a
       compacted Kafka topic: each pod's volume is its own, so windows follow a partition only that way */ -}}
{{- $group := "pipesentry" -}}
{{- if and .Values.config.kafka .Values.config.kafka.group_id -}}
{{- $group = .Values.config.kafka.group_id -}}
{{- end -}}
{{- $_ := set $defaults "state" (dict "scope" "keyed" "keyed_topic" (printf "%s-keyed-state" $group) "keyed_partitions" (max 12 (int .Values.replicaCount)) "snapshots" "kafka") -}}
{{- end -}}
{{- toYaml (mustMergeOverwrite $defaults (deepCopy .Values.config)) -}}
{{- end -}}

{{/* The pipesentry container, shared by both shapes. */}}
{{- define "pipesentry.container" -}}
- name: pipesentry
  image: {{ include "pipesentry.image" . | quote }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args: ["run", "--config", "/etc/pipesentry/config.yaml"]
  ports:
    - name: http
      containerPort: {{ .Values.service.port }}
      protocol: TCP
  {{- if or .Values.secretEnv .Values.env }}
  env:
    {{- range .Values.secretEnv }}
    - name: {{ .name }}
      valueFrom:
        secretKeyRef:
          name: {{ .secretName }}
          key: {{ .key }}
    {{- end }}
    {{- with .Values.env }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
  resources:
    {{- toYaml .Values.resources | nindent 4 }}
  startupProbe:
    httpGet: {path: /healthz, port: http}
    {{- toYaml .Values.startupProbe | nindent 4 }}
  livenessProbe:
    httpGet: {path: /healthz, port: http}
    periodSeconds: 10
    timeoutSeconds: 3
    failureThreshold: 3
  readinessProbe:
    httpGet: {path: /readyz, port: http}
    periodSeconds: 5
    timeoutSeconds: 3
    failureThreshold: 2
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  volumeMounts:
    - name: config
      mountPath: /etc/pipesentry/config.yaml
      subPath: config.yaml
      readOnly: true
    - name: rules
      mountPath: /etc/pipesentry/rules
      readOnly: true
    - name: data
      mountPath: /var/lib/pipesentry
    - name: tmp
      mountPath: /tmp
    {{- if eq .Values.mode "sidecar" }}
    - name: app-logs
      mountPath: {{ .Values.sidecar.logDir }}
      readOnly: true
    {{- end }}
    {{- with .Values.extraVolumeMounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end -}}

{{- define "pipesentry.podSpec" -}}
serviceAccountName: {{ include "pipesentry.fullname" . }}
automountServiceAccountToken: false
terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
containers:
  {{- if eq .Values.mode "sidecar" }}
  {{- $app := deepCopy .Values.sidecar.app }}
  {{- $mounts := default (list) $app.volumeMounts }}
  {{- $_ := set $app "volumeMounts" (append $mounts (dict "name" "app-logs" "mountPath" .Values.sidecar.logDir)) }}
  - {{- toYaml $app | nindent 4 }}
  {{- end }}
  {{- include "pipesentry.container" . | nindent 2 }}
volumes:
  - name: config
    configMap:
      name: {{ include "pipesentry.fullname" . }}-config
  - name: rules
    configMap:
      name: {{ include "pipesentry.fullname" . }}-rules
  - name: tmp
    emptyDir:
      medium: Memory
      sizeLimit: 64Mi
  {{- if not (and .Values.persistence.enabled (ne .Values.mode "sidecar")) }}
  - name: data
    emptyDir:
      sizeLimit: {{ .Values.dataSizeLimit }}
  {{- end }}
  {{- if eq .Values.mode "sidecar" }}
  - name: app-logs
    emptyDir:
      sizeLimit: {{ .Values.sidecar.logVolumeSizeLimit }}
  {{- end }}
  {{- with .Values.extraVolumes }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end -}}

{{/* The Prometheus Operator's API: ServiceMonitor and PrometheusRule need it. */}}
{{- define "pipesentry.hasMonitoringAPI" -}}
{{- if .Capabilities.APIVersions.Has "monitoring.coreos.com/v1" }}true{{ end -}}
{{- end -}}
