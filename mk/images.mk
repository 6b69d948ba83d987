# Container images (images/, docs/images.md). `make images` builds housing-mlops/{mlflow,jobs,serving}:<version>
# (Docker engine started if needed; a local debootstrap base when no registry answers); `make test-images`
# builds them and runs the whole pipeline from containers on a Docker network (tests/images/run.sh).
.PHONY: images images-base test-images lint-images

IMAGES_SH := images/build.sh images/docker-up.sh images/base/build.sh images/common/install-venv.sh images/lock.sh \
	tests/images/run.sh tests/images/services/services.sh

images: ## build the container images housing-mlops/{mlflow,jobs,serving}:<version> (docs/images.md)
	UV_VERSION=$(UV_VERSION) images/build.sh mlflow jobs serving

images-base: ## (re)build the local debootstrap base image used when no registry is reachable
	images/docker-up.sh
	images/base/build.sh $${LOCAL_BASE_IMAGE:-housing-mlops/base:bookworm-py3.11}

test-images: ## build the images, then data push → train → promote → fetch-model → serve → infer in containers
	UV_VERSION=$(UV_VERSION) tests/images/run.sh

lint-images: ## shellcheck the image and test-images scripts
	@command -v shellcheck >/dev/null || { apt-get update -qq && apt-get install -y -qq shellcheck >/dev/null; }
	shellcheck $(IMAGES_SH)
