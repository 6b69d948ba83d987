{{/*
The release lifecycle's chart-side helpers, in one place (the rules themselves: hooks/src/housing_mlops/lifecycle.py,
docs/architecture.md): the training identity (computed here only), the revision's trigger, what the hooks know
about their revision, the name of Helm's record they read, and the exit codes that are verdicts.
*/}}

{{/*
Training identity: what determines the model, hashed (16 hex). See lifecycle.py and docs/chart.md.
*/}}
{{- define "housing-mlops.training.identity" -}}
{{- $v := .Values -}}
{{- $inputs := dict "model" .Values.global.model.name "experiment" $v.experiment "data" $v.data "code" $v.code "params" $v.params "image" (include "housing-mlops.image" (dict "context" . "image" $v.image)) "retrainNonce" $v.retrainNonce -}}
{{- $inputs | toJson | sha256sum | trunc 16 -}}
{{- end -}}

{{/*
podFailurePolicy of the jobs: a verdict is final (errors.py: 2 bad arguments, 3 the gate rejected, 4 the training
the hook waits for failed, 5 Helm no longer deploys the revision, 6 the version to restore is gone), a crash is
retried up to backoffLimit, an eviction or preemption is not the job's failure.
Usage: include "housing-mlops.podFailurePolicy" (dict "promote" (list 2 3)): container name -> final exit codes
*/}}
{{- define "housing-mlops.podFailurePolicy" -}}
podFailurePolicy:
  rules:
    {{- range $container, $codes := . }}
    - action: FailJob
      onExitCodes:
        containerName: {{ $container }}
        operator: In
        values: {{ toJson $codes }}
    {{- end }}
    - action: Ignore
      onPodConditions:
        - type: DisruptionTarget
          status: "True"
{{- end -}}

{{/*
The Helm revision's trigger string: training tags the model version with it (HOUSING_TRIGGER) and the
promotion hook promotes the version carrying it. `<release>-<revision>`.
*/}}
{{- define "housing-mlops.trigger" -}}
{{- printf "%s-%d" .Release.Name (int .Release.Revision) -}}
{{- end -}}

{{/*
What the promotion and rollback hooks need to know about the revision (lifecycle.py): the training identity
and Job it stands for (from the training ConfigMap that this revision's manifest applied before the hook ran;
absent when training is off) and the release/revision whose served version they record or restore.
*/}}
{{- define "housing-mlops.lifecycleEnv" -}}
- name: HOUSING_IDENTITY
  valueFrom:
    configMapKeyRef:
      name: {{ include "housing-mlops.fullname" (dict "context" . "component" "training") }}
      key: identity
      optional: true
- name: HOUSING_RELEASE
  value: {{ printf "%s/%s" .Release.Namespace .Release.Name | quote }}
- name: HOUSING_REVISION
  value: {{ .Release.Revision | quote }}
- name: HOUSING_HELM_RECORD
  value: "true"
{{- end -}}

{{/* The Secret in which Helm (3 and 4, `secret` storage driver) records this revision: the hooks read it. */}}
{{- define "housing-mlops.helmRecord" -}}
{{- printf "sh.helm.release.v1.%s.v%d" .Release.Name (int .Release.Revision) -}}
{{- end -}}

{{/* Exit codes that are verdicts, not crashes (errors.py VERDICT_EXIT_CODES): a Job fails at once on them. */}}
{{- define "housing-mlops.verdictExitCodes" -}}
[2, 3, 4, 5, 6, 7]
{{- end -}}
