{{/*
TLS to Kafka (client certificate) and Cassandra: settings, Secret volumes, mounts and key
passwords, included by the ConfigMap and by every pod (services and setup Job) through
_helpers.tpl. docs/OPERATIONS.md, "TLS to Kafka and Cassandra".
*/}}
{{- define "scheduler.tls.config" -}}
{{- with .Values.kafka.tls }}
{{- if .secretName }}
SCHEDULER_KAFKA_SSL_CERTIFICATE_LOCATION: {{ printf "/etc/scheduler/kafka-tls/%s" .certificateKey | quote }}
SCHEDULER_KAFKA_SSL_KEY_LOCATION: {{ printf "/etc/scheduler/kafka-tls/%s" .keyKey | quote }}
{{- end }}
{{- if not .checkHostname }}
SCHEDULER_KAFKA_SSL_CHECK_HOSTNAME: "false"
{{- end }}
{{- end }}
{{- with .Values.cassandra.tls }}
{{- if .enabled }}
SCHEDULER_CASSANDRA_SSL_ENABLED: "true"
SCHEDULER_CASSANDRA_SSL_CHECK_HOSTNAME: {{ .checkHostname | quote }}
{{- if and .secretName .caKey }}
SCHEDULER_CASSANDRA_SSL_CA_LOCATION: {{ printf "/etc/scheduler/cassandra-tls/%s" .caKey | quote }}
{{- end }}
{{- if and .secretName .certificateKey }}
SCHEDULER_CASSANDRA_SSL_CERTIFICATE_LOCATION: {{ printf "/etc/scheduler/cassandra-tls/%s" .certificateKey | quote }}
SCHEDULER_CASSANDRA_SSL_KEY_LOCATION: {{ printf "/etc/scheduler/cassandra-tls/%s" .keyKey | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "scheduler.tls.env" -}}
{{- with .Values.kafka.tls }}
{{- if and .secretName .keyPasswordKey }}
- name: SCHEDULER_KAFKA_SSL_KEY_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ .keyPasswordKey }}
{{- end }}
{{- end }}
{{- with .Values.cassandra.tls }}
{{- if and .enabled .secretName .keyPasswordKey }}
- name: SCHEDULER_CASSANDRA_SSL_KEY_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ .keyPasswordKey }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Read-only for the pod's group (fsGroup) only: the keys are in there. */}}
{{- define "scheduler.tls.volumes" -}}
{{- if .Values.kafka.tls.secretName }}
- name: kafka-tls
  secret:
    secretName: {{ .Values.kafka.tls.secretName }}
    defaultMode: 0440
{{- end }}
{{- if and .Values.cassandra.tls.enabled .Values.cassandra.tls.secretName }}
- name: cassandra-tls
  secret:
    secretName: {{ .Values.cassandra.tls.secretName }}
    defaultMode: 0440
{{- end }}
{{- end -}}

{{- define "scheduler.tls.volumeMounts" -}}
{{- if .Values.kafka.tls.secretName }}
- name: kafka-tls
  mountPath: /etc/scheduler/kafka-tls
  readOnly: true
{{- end }}
{{- if and .Values.cassandra.tls.enabled .Values.cassandra.tls.secretName }}
- name: cassandra-tls
  mountPath: /etc/scheduler/cassandra-tls
  readOnly: true
{{- end }}
{{- end -}}
