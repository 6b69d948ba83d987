{{/* Name of the ServingRuntime the InferenceService runs, by `inference.runtime`: `housing`, the chart's own
(servingruntime.yaml); `kserve-mlserver`, KServe's built-in ClusterServingRuntime of that name (MLServer with its
stock MLflow runtime, installed with KServe's kserve-runtime-configs chart, not by this chart). */}}
{{- define "housing-mlops.inference.runtimeName" -}}
{{- if eq .Values.runtime "housing" -}}
{{- include "housing-mlops.fullname" (dict "context" . "component" "serving") -}}
{{- else if eq .Values.runtime "kserve-mlserver" -}}
kserve-mlserver
{{- else -}}
{{- fail (printf "inference.runtime %q is not a runtime this chart knows (housing, kserve-mlserver)" .Values.runtime) -}}
{{- end -}}
{{- end -}}

{{/*
The tracking server's host:port as the alias-mode URI names it (the port made explicit): each release's storage
container matches only the URIs of its own MLflow, so two releases never fetch each other's models.
*/}}
{{- define "housing-mlops.inference.mlflowAuthority" -}}
{{- $url := urlParse (include "housing-mlops.mlflow.url" .) -}}
{{- $host := $url.host -}}
{{- if not (regexMatch ":[0-9]+$" $host) -}}
{{- $host = printf "%s:%s" $host (ternary "443" "80" (eq $url.scheme "https")) -}}
{{- end -}}
{{- $host -}}
{{- end -}}

{{/* Alias mode: the prefix of this release's mlflow:// URIs (what its storage container answers for). */}}
{{- define "housing-mlops.inference.uriPrefix" -}}
{{- printf "mlflow://%s/" (include "housing-mlops.inference.mlflowAuthority" .) -}}
{{- end -}}

{{/* storageUri of the predictor: alias mode, the version the pod's pin annotation names (lifecycle.pinned_uri);
pinned mode, the URI given. */}}
{{- define "housing-mlops.inference.storageUri" -}}
{{- if eq .Values.model.uriMode "alias" -}}
{{- printf "%s%s/pinned" (include "housing-mlops.inference.uriPrefix" .) .Values.global.model.name -}}
{{- else -}}
{{- .Values.model.storageUri -}}
{{- end -}}
{{- end -}}

{{/* Fail early, with what to install, when the KServe CRDs are missing. */}}
{{- define "housing-mlops.inference.crdGuard" -}}
{{- if .Values.crdCheck.enabled -}}
{{- $apis := list "serving.kserve.io/v1beta1/InferenceService" "serving.kserve.io/v1alpha1/ServingRuntime" -}}
{{- if and .Values.storageContainer.enabled (eq .Values.model.uriMode "alias") -}}
{{- $apis = append $apis "serving.kserve.io/v1alpha1/ClusterStorageContainer" -}}
{{- end -}}
{{- range $apis -}}
{{- if not ($.Capabilities.APIVersions.Has .) -}}
{{- fail (printf "inference: the cluster has no %s. Install KServe (v0.16+, or v0.15 with inference.deploymentMode=RawDeployment; its CRDs and controller, e.g. the kserve-crd and kserve Helm charts) first, or set inference.enabled=false. Rendering offline? pass --api-versions %s (or inference.crdCheck.enabled=false)." . .) -}}
{{- end -}}
{{- end -}}
{{- include "housing-mlops.inference.kserveVersionGuard" . -}}
{{- end -}}
{{- end -}}

{{/*
The oldest KServe the chart supports: v0.16 in Standard mode (older releases do not know the mode), v0.15 in
RawDeployment mode. KServe puts no version on its CRDs, so it is told by a field its InferenceService CRD
(v1beta1) has had since that release: v0.16 added spec.predictor.storageUris. Needs `get` on
CustomResourceDefinitions; `helm template` (no cluster) skips it.
*/}}
{{- define "housing-mlops.inference.kserveVersionGuard" -}}
{{- if eq .Values.deploymentMode "Standard" -}}
{{- with lookup "apiextensions.k8s.io/v1" "CustomResourceDefinition" "" "inferenceservices.serving.kserve.io" -}}
{{- $predictor := dict -}}
{{- range (dig "spec" "versions" list .) -}}
{{- if eq (dig "name" "" .) "v1beta1" -}}
{{- $predictor = dig "schema" "openAPIV3Schema" "properties" "spec" "properties" "predictor" "properties" dict . -}}
{{- end -}}
{{- end -}}
{{- if not (hasKey $predictor "storageUris") -}}
{{- fail "inference: the cluster's KServe is older than v0.16 (its InferenceService CRD has no spec.predictor.storageUris) and has no Standard deployment mode: upgrade KServe to v0.16+ (kserve-crd and kserve charts), or set inference.deploymentMode=RawDeployment (KServe v0.15)." -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels of the predictor pods, as KServe sets them. */}}
{{- define "housing-mlops.inference.podSelector" -}}
serving.kserve.io/inferenceservice: {{ include "housing-mlops.isvcName" . | default "housing-model" }}
{{- end -}}
