{{/*
A hook Job of the promotion subchart running one `housing-mlops` command.
Usage: include "housing-mlops.promotion.job" (dict "context" $ "name" "promote" "hook" "post-install,post-upgrade"
  "weight" 10 "args" (list "promote") "env" <yaml string>)
*/}}
{{- define "housing-mlops.promotion.job" -}}
{{- $ := .context -}}
{{- $v := $.Values -}}
{{- $isvc := include "housing-mlops.isvcName" $ -}}
apiVersion: batch/v1
kind: Job
metadata:
  # unique per revision: a hook of revision N never collides with revision N-1's
  name: {{ printf "%s-%s-%d" $.Release.Name .name (int $.Release.Revision) | trunc 63 | trimSuffix "-" }}
  namespace: {{ $.Release.Namespace }}
  labels:
    {{- include "housing-mlops.labels" (dict "context" $ "component" "promotion") | nindent 4 }}
  annotations:
    helm.sh/hook: {{ .hook }}
    helm.sh/hook-weight: {{ .weight | quote }}
    helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
    {{- include "housing-mlops.scanSkips" (dict "context" $ "image" $v.image "resources" $v.resources "pullPolicy" (include "housing-mlops.imagePullPolicy" (dict "context" $ "image" $v.image)) "pod" true "skips" (list "secretEnv" "ephemeral" "apiToken")) | trim | nindent 4 }}
spec:
  backoffLimit: {{ $v.backoffLimit }}
  {{- include "housing-mlops.podFailurePolicy" (dict .name (include "housing-mlops.verdictExitCodes" . | fromJsonArray)) | nindent 2 }}
  activeDeadlineSeconds: {{ $v.activeDeadlineSeconds }}
  ttlSecondsAfterFinished: {{ $v.ttlSecondsAfterFinished }}
  template:
    metadata:
      labels:
        {{- include "housing-mlops.labels" (dict "context" $ "component" "promotion") | nindent 8 }}
        {{- include "housing-mlops.mlflowClientLabel" $ | nindent 8 }}
    spec:
      restartPolicy: Never
      serviceAccountName: {{ include "housing-mlops.fullname" (dict "context" $ "component" "promotion") }}
      # the hooks read the training Job (fail fast), Helm's record of their revision and the InferenceService
      automountServiceAccountToken: true
      {{- with (include "housing-mlops.imagePullSecrets" $) }}{{ . | nindent 6 }}{{- end }}
      securityContext:
        {{- include "housing-mlops.podSecurityContext" $v.podSecurityContext | nindent 8 }}
      containers:
        - name: {{ .name }}
          image: {{ include "housing-mlops.image" (dict "context" $ "image" $v.image) }}
          imagePullPolicy: {{ include "housing-mlops.imagePullPolicy" (dict "context" $ "image" $v.image) }}
          command: ["housing-mlops"]
          args: {{ toJson .args }}
          env:
            {{- include "housing-mlops.mlflow.clientEnv" $ | nindent 12 }}
            {{- include "housing-mlops.s3.env" $ | nindent 12 }}
            {{- .env | nindent 12 }}
            {{- if $isvc }}
            - name: HOUSING_ISVC_NAME
              value: {{ $isvc | quote }}
            - name: HOUSING_ISVC_NAMESPACE
              value: {{ $.Release.Namespace | quote }}
            {{- end }}
            - name: HOME
              value: /tmp
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          securityContext:
            {{- include "housing-mlops.containerSecurityContext" $ | nindent 12 }}
          volumeMounts:
            {{- include "housing-mlops.tmpMount" $ | nindent 12 }}
      volumes:
        {{- include "housing-mlops.tmpVolume" $ | nindent 8 }}
      {{- with $v.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end -}}
