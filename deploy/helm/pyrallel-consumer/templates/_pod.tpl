{{/*
The consumer pod template of one color: (dict "root" $ "color" "blue"). Used by the per-color Deployments and, with
argo.enabled, by the Rollout (whose revisions are one color each).

Every pod starts PAUSED (PYRALLEL_START_PAUSED=true) whatever the active color is: the controller resumes the
active color's pods through their control port. So a pod of the inactive color that restarts stays paused, and
no chart value decides whether a pod processes (a helm upgrade cannot make both colors active).
*/}}
{{- define "pyrallel.consumerEnvValue" -}}
{{- if kindIs "slice" . -}}{{ join "," . }}
{{- else if kindIs "map" . -}}{{ toJson . }}
{{- else if kindIs "bool" . -}}{{ ternary "true" "false" . }}
{{- else if kindIs "float64" . -}}{{ int64 . }}
{{- else -}}{{ toString . }}
{{- end -}}
{{- end -}}

{{- define "pyrallel.consumerPodTemplate" -}}
{{- $root := .root -}}
{{- $color := .color -}}
{{- $values := $root.Values -}}
{{- $colorValues := get $values.colors $color -}}
{{- $chartEnv := list "PYRALLEL_BOOTSTRAP_SERVERS" "PYRALLEL_GROUP_ID" "PYRALLEL_TOPICS" "PYRALLEL_PAUSE_MODE" "PYRALLEL_START_PAUSED" "PYRALLEL_COLOR" "PYRALLEL_INSTANCE_ID" "PYRALLEL_CONTROL_HOST" "PYRALLEL_CONTROL_PORT" "PYRALLEL_CONTROL_TOKEN" "PYRALLEL_METRICS_HOST" "PYRALLEL_METRICS_PORT" "PYRALLEL_LOG_FORMAT" "POD_NAMESPACE" -}}
{{- range $key, $_ := $values.consumer.config }}{{ $chartEnv = append $chartEnv (printf "PYRALLEL_%s" (upper $key)) }}{{ end -}}
{{- range concat $values.consumer.extraEnv ($colorValues.extraEnv | default list) -}}
{{- if has .name $chartEnv -}}
{{- fail (printf "consumer.extraEnv / colors.%s.extraEnv: %s is already set by the chart (use the value that sets it)" $color .name) -}}
{{- end -}}
{{- end -}}
metadata:
  labels:
    {{- include "pyrallel.colorSelectorLabels" (dict "root" $root "color" $color) | nindent 4 }}
    app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
    {{- with $values.consumer.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with $values.consumer.podAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  serviceAccountName: {{ include "pyrallel.consumerServiceAccount" $root }}
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: {{ include "pyrallel.terminationGrace" $root }}
  {{- with $values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $values.consumer.podSecurityContext | nindent 4 }}
  containers:
    - name: consumer
      image: {{ include "pyrallel.consumerImage" (dict "root" $root "color" $color) | quote }}
      imagePullPolicy: {{ $values.image.pullPolicy }}
      {{- with $values.command }}
      command:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $values.args }}
      args:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      ports:
        # The controller finds a pod's control URL from status.podIP and the port NAMED "control".
        - name: control
          containerPort: {{ $values.consumer.controlPort }}
          protocol: TCP
        - name: metrics
          containerPort: {{ $values.consumer.metricsPort }}
          protocol: TCP
      env:
        {{- /* First, so that the chart's values can use them: Kubernetes expands $(NAME) in a value from the
        envFrom variables and the env entries above it, e.g. consumer.config.kafka."sasl.password": $(KAFKA_PASSWORD)
        with KAFKA_PASSWORD from a Secret in consumer.extraEnv. */}}
        {{- with $values.consumer.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
        {{- with $colorValues.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
        - name: PYRALLEL_BOOTSTRAP_SERVERS
          value: {{ $values.bootstrapServers | quote }}
        - name: PYRALLEL_GROUP_ID
          value: {{ include "pyrallel.colorGroup" (dict "root" $root "color" $color) | quote }}
        - name: PYRALLEL_TOPICS
          value: {{ include "pyrallel.topics" $root | quote }}
        # B holds its partitions while paused (each color its own group); C leaves the one shared group.
        - name: PYRALLEL_PAUSE_MODE
          value: {{ ternary "hold" "release" (eq $values.strategy "B") | quote }}
        - name: PYRALLEL_START_PAUSED
          value: "true"
        - name: PYRALLEL_COLOR
          value: {{ $color | quote }}
        - name: PYRALLEL_INSTANCE_ID
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        - name: POD_NAMESPACE
          valueFrom:
            fieldRef:
              fieldPath: metadata.namespace
        - name: PYRALLEL_CONTROL_HOST
          value: "0.0.0.0"
        - name: PYRALLEL_CONTROL_PORT
          value: {{ $values.consumer.controlPort | int | quote }}
        - name: PYRALLEL_CONTROL_TOKEN
          valueFrom:
            secretKeyRef:
              name: {{ include "pyrallel.tokenSecretName" $root }}
              key: {{ include "pyrallel.tokenSecretKey" $root }}
        - name: PYRALLEL_METRICS_HOST
          value: "0.0.0.0"
        - name: PYRALLEL_METRICS_PORT
          value: {{ $values.consumer.metricsPort | int | quote }}
        - name: PYRALLEL_LOG_FORMAT
          value: {{ $values.consumer.logFormat | quote }}
        {{- range $key, $value := $values.consumer.config }}
        - name: {{ printf "PYRALLEL_%s" (upper $key) }}
          value: {{ include "pyrallel.consumerEnvValue" $value | quote }}
        {{- end }}
      {{- with $values.consumer.envFrom }}
      envFrom:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      # /readyz: 200 when ACTIVE or PAUSED and a broker has answered (a paused color is ready to be resumed);
      # /healthz: the process serves. Both are public routes of the control server (no token).
      readinessProbe:
        httpGet:
          path: /readyz
          port: control
        {{- toYaml $values.consumer.readinessProbe | nindent 8 }}
      livenessProbe:
        httpGet:
          path: /healthz
          port: control
        {{- toYaml $values.consumer.livenessProbe | nindent 8 }}
      resources:
        {{- toYaml $values.consumer.resources | nindent 8 }}
      securityContext:
        {{- toYaml $values.consumer.securityContext | nindent 8 }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
  volumes:
    # The root filesystem is read-only; the process engine's and Python's temporary files go here.
    - name: tmp
      emptyDir: {}
  {{- with $values.consumer.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $values.consumer.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $values.consumer.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $values.consumer.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}
