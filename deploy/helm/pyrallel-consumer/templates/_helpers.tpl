{{/* Names ------------------------------------------------------------------------------------------------- */}}

{{- define "pyrallel.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "pyrallel.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The blue/green deployment's name: the ConsumerDeployment's name and the pods' pyrallel.io/deployment label. */}}
{{- define "pyrallel.deploymentName" -}}
{{- default (include "pyrallel.fullname" .) .Values.deploymentName | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "pyrallel.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels ------------------------------------------------------------------------------------------------ */}}

{{- define "pyrallel.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pyrallel.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
pyrallel.io/deployment: {{ include "pyrallel.deploymentName" . }}
{{- end -}}

{{- define "pyrallel.labels" -}}
helm.sh/chart: {{ include "pyrallel.chart" . }}
{{ include "pyrallel.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector of one color's consumer pods: (dict "root" $ "color" "blue") */}}
{{- define "pyrallel.colorSelectorLabels" -}}
{{ include "pyrallel.selectorLabels" .root }}
app.kubernetes.io/component: consumer
pyrallel.io/color: {{ .color }}
{{- end -}}

{{/* Values derived from several others ------------------------------------------------------------------- */}}

{{- define "pyrallel.groupId" -}}
{{- default (include "pyrallel.deploymentName" .) .Values.groupId -}}
{{- end -}}

{{/* The consumer group of a color: (dict "root" $ "color" "blue"). B: one per color; C: the one group. */}}
{{- define "pyrallel.colorGroup" -}}
{{- $root := .root -}}
{{- if eq $root.Values.strategy "B" -}}
{{- default (printf "%s-%s" (include "pyrallel.groupId" $root) .color) (get $root.Values.groups .color) -}}
{{- else -}}
{{- include "pyrallel.groupId" $root -}}
{{- end -}}
{{- end -}}

{{/* The topics as one comma-separated list (topic first, then topics). */}}
{{- define "pyrallel.topics" -}}
{{- $topics := list -}}
{{- if .Values.topic }}{{ $topics = append $topics .Values.topic }}{{ end -}}
{{- range .Values.topics }}{{ if not (has . $topics) }}{{ $topics = append $topics . }}{{ end }}{{ end -}}
{{- join "," $topics -}}
{{- end -}}

{{- define "pyrallel.usesConsumerPods" -}}
{{- if ne .Values.strategy "E" }}true{{ end -}}
{{- end -}}

{{/*
The active color the chart renders with. The ConsumerDeployment's live spec.activeColor wins over the
activeColor value: after the first install the color is changed by patching the resource (an operator, or Argo's
set-active Job), and a later helm upgrade must neither reset it nor point KEDA or the connectors' states at the
other color. Without a cluster (helm template, helm lint) lookup returns nothing and the value is used.
*/}}
{{- define "pyrallel.activeColor" -}}
{{- $live := lookup "pyrallel.io/v1alpha1" "ConsumerDeployment" .Release.Namespace (include "pyrallel.deploymentName" .) -}}
{{- $color := "" -}}
{{- if $live -}}{{- $color = dig "spec" "activeColor" "" $live -}}{{- end -}}
{{- default .Values.activeColor $color -}}
{{- end -}}

{{- define "pyrallel.otherColor" -}}
{{- if eq . "blue" }}green{{ else }}blue{{ end -}}
{{- end -}}

{{/* The consumer image of a color: (dict "root" $ "color" "blue"). */}}
{{- define "pyrallel.consumerImage" -}}
{{- $root := .root -}}
{{- $own := (get $root.Values.colors .color).image | default dict -}}
{{- $repository := default $root.Values.image.repository $own.repository -}}
{{- $tag := default (default $root.Chart.AppVersion $root.Values.image.tag) $own.tag -}}
{{- printf "%s:%s" $repository $tag -}}
{{- end -}}

{{- define "pyrallel.toolingImage" -}}
{{- printf "%s:%s" .Values.controller.image.repository (default .Chart.AppVersion .Values.controller.image.tag) -}}
{{- end -}}

{{- define "pyrallel.tokenSecretName" -}}
{{- default (printf "%s-control-token" (include "pyrallel.fullname" .)) .Values.controlToken.existingSecret -}}
{{- end -}}

{{- define "pyrallel.tokenSecretKey" -}}
{{- if .Values.controlToken.existingSecret }}{{ .Values.controlToken.existingSecretKey }}{{ else }}token{{ end -}}
{{- end -}}

{{- define "pyrallel.controllerName" -}}
{{- printf "%s-controller" (include "pyrallel.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "pyrallel.controllerServiceAccount" -}}
{{- default (include "pyrallel.controllerName" .) .Values.controller.serviceAccount.name -}}
{{- end -}}

{{- define "pyrallel.consumerServiceAccount" -}}
{{- if .Values.consumer.serviceAccount.create -}}
{{- default (printf "%s-consumer" (include "pyrallel.fullname" .)) .Values.consumer.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.consumer.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Lease the controller replicas elect their leader with: the controller names it after the deployment
(pyrallel_consumer.bluegreen.kubernetes.reconciler.lease_name); the Role grants get/update on this name only. */}}
{{- define "pyrallel.leaseName" -}}
{{- printf "pyrallel-controller-%s" (include "pyrallel.deploymentName" .) -}}
{{- end -}}

{{- define "pyrallel.analysisName" -}}
{{- printf "%s-analysis" (include "pyrallel.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "pyrallel.connectName" -}}
{{- default (printf "%s-connect" (include "pyrallel.fullname" .)) .Values.strimzi.connect.name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* A color's connector name: (dict "root" $ "color" "blue"). */}}
{{- define "pyrallel.connectorName" -}}
{{- $root := .root -}}
{{- default (printf "%s-%s" (include "pyrallel.deploymentName" $root) .color) (get $root.Values.connect.connectors .color) -}}
{{- end -}}

{{- define "pyrallel.connectUrl" -}}
{{- if .Values.connect.url -}}
{{- .Values.connect.url -}}
{{- else if .Values.strimzi.enabled -}}
{{- printf "http://%s-connect-api.%s.svc:8083" (include "pyrallel.connectName" .) .Release.Namespace -}}
{{- end -}}
{{- end -}}

{{/* terminationGracePeriodSeconds: the drain's timeout plus 15 s for the last commit and leaving the group. */}}
{{- define "pyrallel.terminationGrace" -}}
{{- if not (kindIs "invalid" .Values.consumer.terminationGracePeriodSeconds) -}}
{{- .Values.consumer.terminationGracePeriodSeconds -}}
{{- else -}}
{{- $drainMs := int (default 30000 (get .Values.consumer.config "drain_timeout_ms")) -}}
{{- add (div (add $drainMs 999) 1000) 15 -}}
{{- end -}}
{{- end -}}

{{/* Render-time checks the JSON schema cannot express (each names the value). */}}
{{- define "pyrallel.validate" -}}
{{- if include "pyrallel.usesConsumerPods" . -}}
{{- if not .Values.image.repository -}}
{{- fail (printf "image.repository is required with strategy %s (the consumer image)" .Values.strategy) -}}
{{- end -}}
{{- if not (include "pyrallel.topics" .) -}}
{{- fail "topic (or topics) is required: the topic(s) the consumers subscribe to" -}}
{{- end -}}
{{- end -}}
{{- if not .Values.bootstrapServers -}}
{{- fail "bootstrapServers is required (host:port[,host:port...])" -}}
{{- end -}}
{{- if and (eq .Values.strategy "E") (not (include "pyrallel.connectUrl" .)) -}}
{{- fail "connect.url is required with strategy E (or strimzi.enabled=true)" -}}
{{- end -}}
{{- if and .Values.strimzi.enabled (not (include "pyrallel.topics" .)) (not (hasKey .Values.strimzi.connector.config "topics")) (not (hasKey .Values.strimzi.connector.config "topics.regex")) -}}
{{- fail "topic (or topics, or strimzi.connector.config.topics) is required: the topic(s) the connectors read" -}}
{{- end -}}
{{- if and .Values.strimzi.enabled (ne .Values.strategy "E") -}}
{{- fail (printf "strimzi.enabled needs strategy E, not %s" .Values.strategy) -}}
{{- end -}}
{{- if .Values.keda.enabled -}}
{{- if eq .Values.strategy "E" -}}
{{- fail "keda.enabled needs strategy B or C: strategy E runs connectors, not consumer pods" -}}
{{- end -}}
{{- if gt (int .Values.keda.maxReplicaCount) (int .Values.keda.partitions) -}}
{{- fail (printf "keda.maxReplicaCount (%d) must not exceed keda.partitions (%d): a consumer beyond the partition count gets no partition" (int .Values.keda.maxReplicaCount) (int .Values.keda.partitions)) -}}
{{- end -}}
{{- if gt (int .Values.keda.minReplicaCount) (int .Values.keda.maxReplicaCount) -}}
{{- fail "keda.minReplicaCount must not exceed keda.maxReplicaCount" -}}
{{- end -}}
{{- end -}}
{{- if .Values.argo.enabled -}}
{{- if eq .Values.strategy "E" -}}
{{- fail "argo.enabled needs strategy B or C: strategy E runs connectors, not consumer pods" -}}
{{- end -}}
{{- if and (not (kindIs "invalid" .Values.argo.scaleDownDelaySeconds)) (le (int .Values.argo.scaleDownDelaySeconds) (int .Values.argo.setActiveWaitSeconds)) -}}
{{- fail (printf "argo.scaleDownDelaySeconds (%d) must exceed argo.setActiveWaitSeconds (%d): Argo cancels the set-active analysis when the delay ends" (int .Values.argo.scaleDownDelaySeconds) (int .Values.argo.setActiveWaitSeconds)) -}}
{{- end -}}
{{- if and .Release.IsInstall (ne .Values.argo.color .Values.activeColor) -}}
{{- fail (printf "argo.color (%s) must equal activeColor (%s) at the first install: the Rollout's first revision is the active color" .Values.argo.color .Values.activeColor) -}}
{{- end -}}
{{- end -}}
{{- end -}}
