{{/* Names: <fullname>-<component>. */}}
{{- define "scheduler.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "scheduler.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "scheduler.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "scheduler.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "scheduler.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "scheduler.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: pit-scheduler
{{- end -}}

{{/* Selector labels of one component: include with (dict "root" $ "component" "ingest"). */}}
{{- define "scheduler.selector" -}}
app.kubernetes.io/name: {{ include "scheduler.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* repository@digest when a digest is set (it pins the image; the tag is then ignored). */}}
{{- define "scheduler.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "scheduler.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "scheduler.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "scheduler.secretName" -}}
{{- default (printf "%s-secrets" (include "scheduler.fullname" .)) .Values.secrets.existingSecret -}}
{{- end -}}

{{/* Environment of every container: the shared ConfigMap, the Kafka/Cassandra passwords. */}}
{{- define "scheduler.env" -}}
- name: SCHEDULER_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "scheduler.secretName" . }}
      key: {{ .Values.secrets.keys.kafkaSaslPassword }}
      optional: true
- name: SCHEDULER_CASSANDRA_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "scheduler.secretName" . }}
      key: {{ .Values.secrets.keys.cassandraPassword }}
      optional: true
{{- include "scheduler.tls.env" . }}
{{- with .Values.encryption.keyringSecret }}
- name: SCHEDULER_ENCRYPTION_KEYRING
  valueFrom:
    secretKeyRef: {name: {{ . | quote }}, key: keyring.json}
- {name: SCHEDULER_ENCRYPTION_ENABLED, value: {{ $.Values.encryption.enabled | quote }}}
- {name: SCHEDULER_ENCRYPTION_PAYLOADS, value: {{ $.Values.encryption.payloads | quote }}}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "scheduler.envFrom" -}}
- configMapRef:
    name: {{ include "scheduler.fullname" . }}-config
{{- with .Values.extraEnvFrom }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Volumes every pod gets: a writable /tmp (the root fs is read-only) and the Kafka CA. */}}
{{- define "scheduler.volumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- if .Values.kafka.caConfigMap }}
- name: kafka-ca
  configMap:
    name: {{ .Values.kafka.caConfigMap }}
{{- end }}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- include "scheduler.tls.volumes" . }}
{{- end -}}

{{- define "scheduler.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if .Values.kafka.caConfigMap }}
- name: kafka-ca
  mountPath: /etc/scheduler/kafka-ca
  readOnly: true
{{- end }}
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- include "scheduler.tls.volumeMounts" . }}
{{- end -}}

{{/* Pod template annotations: roll the pods when the configuration changes. */}}
{{- define "scheduler.podAnnotations" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- end -}}


{{/* Extra pod labels: the chart-wide podLabels, then the component's (dict "root" $ "values" ...).
Never the selector labels: those are the chart's. */}}
{{- define "scheduler.podLabels" -}}
{{- $labels := merge (deepCopy (.values.podLabels | default dict)) (.root.Values.podLabels | default dict) -}}
{{- with $labels }}
{{- toYaml . }}
{{- end }}
{{- end -}}

{{/* topologySpreadConstraints; one without a labelSelector gets the component's selector, the
usual intent ("spread these pods"), so values need not repeat the chart's labels. */}}
{{- define "scheduler.topologySpread" -}}
{{- $selector := include "scheduler.selector" (dict "root" .root "component" .component) | fromYaml -}}
{{- $out := list -}}
{{- range .constraints }}
{{- $c := deepCopy . -}}
{{- if not (hasKey $c "labelSelector") }}
{{- $_ := set $c "labelSelector" (dict "matchLabels" $selector) -}}
{{- end }}
{{- $out = append $out $c -}}
{{- end }}
{{- toYaml $out }}
{{- end -}}

{{/* Pods a component runs when nothing scales it by hand: the PDB's reason to exist. */}}
{{- define "scheduler.podCount" -}}
{{- $v := index .root.Values .component -}}
{{- if eq .component "dispatcher" -}}
{{- $v.instances -}}
{{- else if and (hasKey $v "autoscaling") $v.autoscaling.enabled -}}
{{- $v.autoscaling.minReplicas -}}
{{- else -}}
{{- $v.replicas -}}
{{- end -}}
{{- end -}}
