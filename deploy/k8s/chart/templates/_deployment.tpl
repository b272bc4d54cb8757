{{/*
One Deployment of the shared image. Arguments (dict):
  root       the chart context ($)
  name       the Deployment's name suffix (ingest, bucketer, releaser, dispatcher-0, ...)
  component  the component label (ingest, bucketer, releaser, dispatcher)
  command    the console script of the service
  values     the component's values (replicas, resources, probes, grace, nodeSelector, ...)
  replicas   replicas (omitted: left to the HPA)
  port       container port, named "http" for ingest and "metrics" otherwise
  portName   http | metrics
  metricsPort  a second container port named "metrics" (ingest: /metrics apart from the API)
  liveness   path of the liveness probe; readiness: path of the readiness probe
  env        extra env (list), e.g. the dispatcher instance
  strategy   a Deployment strategy (dict)
  selector   extra selector labels (dict)
*/}}
{{- define "scheduler.deployment" -}}
{{- $root := .root -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "scheduler.fullname" $root }}-{{ .name }}
  labels:
    {{- include "scheduler.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
spec:
  {{- if hasKey . "replicas" }}
  replicas: {{ .replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  {{- with .strategy }}
  strategy:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "scheduler.selector" (dict "root" $root "component" .component) | nindent 6 }}
      {{- with .selector }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
  template:
    metadata:
      labels:
        {{- include "scheduler.selector" (dict "root" $root "component" .component) | nindent 8 }}
        {{- with .selector }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
        {{- with (include "scheduler.podLabels" (dict "root" $root "values" .values)) }}
        {{- . | nindent 8 }}
        {{- end }}
      annotations:
        {{- include "scheduler.podAnnotations" $root | nindent 8 }}
        {{- with (merge (deepCopy (.values.podAnnotations | default dict)) ($root.Values.podAnnotations | default dict)) }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "scheduler.serviceAccountName" $root }}
      automountServiceAccountToken: false
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      # Graceful SIGTERM: the current batch/bucket/transaction finishes first.
      terminationGracePeriodSeconds: {{ .values.terminationGracePeriodSeconds }}
      {{- with (.values.priorityClassName | default $root.Values.priorityClassName) }}
      priorityClassName: {{ . }}
      {{- end }}
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: {{ .component }}
          image: {{ include "scheduler.image" $root }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          command: [{{ .command | quote }}]
          ports:
            - name: {{ .portName }}
              containerPort: {{ .port }}
              protocol: TCP
            {{- with .metricsPort }}
            - name: metrics
              containerPort: {{ . }}
              protocol: TCP
            {{- end }}
          envFrom:
            {{- include "scheduler.envFrom" $root | nindent 12 }}
          env:
            {{- with .env }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
            {{- include "scheduler.env" $root | nindent 12 }}
          # startupProbe: liveness waits until the process first answers (slow Cassandra or
          # Kafka at start-up is not a stuck loop).
          startupProbe:
            httpGet:
              path: {{ .liveness }}
              port: {{ .portName }}
            {{- toYaml .values.probes.startup | nindent 12 }}
          livenessProbe:
            httpGet:
              path: {{ .liveness }}
              port: {{ .portName }}
            {{- toYaml .values.probes.liveness | nindent 12 }}
          readinessProbe:
            httpGet:
              path: {{ .readiness }}
              port: {{ .portName }}
            {{- toYaml .values.probes.readiness | nindent 12 }}
          resources:
            {{- toYaml .values.resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          volumeMounts:
            {{- include "scheduler.volumeMounts" $root | nindent 12 }}
      volumes:
        {{- include "scheduler.volumes" $root | nindent 8 }}
      {{- with .values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .values.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .values.topologySpreadConstraints }}
      topologySpreadConstraints:
        {{- include "scheduler.topologySpread" (dict "root" $root "component" $.component "constraints" .) | nindent 8 }}
      {{- end }}
{{- end -}}
