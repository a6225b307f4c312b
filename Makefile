# The README's two commands are `make run` and `make test`; .ci/run calls `make test`.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
APT_PACKAGES := kcat prometheus prometheus-alertmanager maven openjdk-17-jdk-headless chromium chromium-driver

.PHONY: install install-dev system-packages servers-fetch deploy-tools lint typecheck test run demo bench
TOOLS := .devservices/tools

# The editable install builds the native screen in place (detectors/_native.cpython-311-*.so, the
# stable-ABI code the wheel carries as _native.abi3.so). Builds left from before go first: Python
# would import an older one beside the new one by suffix order, or keep the old one silently when
# the optional build fails (no cargo); then the screen is reported "not built" instead.
STALE_NATIVE := detectors/_native*.so

install:
	rm -f $(STALE_NATIVE)
	@echo "pipesentry: installing (editable). pip builds the native screen with cargo in release mode:"
	@echo "  about 5-7 minutes on 2 cores the first time, with no output while rustc runs; later installs reuse detectors/native/target."
	$(PIP) install --progress-bar off -e .

install-dev:
	rm -f $(STALE_NATIVE)
	@echo "pipesentry: installing (editable). pip builds the native screen with cargo in release mode:"
	@echo "  about 5-7 minutes on 2 cores the first time, with no output while rustc runs; later installs reuse detectors/native/target."
	$(PIP) install --progress-bar off -e '.[dev]'

# Debian packages for the real servers the integration tests start, and the headless browser of the
# console tests (chromium + chromium-driver, tests/browser) (needs root, as on CI).
system-packages:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# Kafka and the search node come from Maven Central; fetched once into .devservices/.
servers-fetch:
	$(PYTHON) -m devservices fetch

# Helm (built from the Go module proxy), Checkov and cyclonedx-bom (each in its own venv: their pins
# clash with ours; cyclonedx-bom from the pins the image's build uses) for tests/deploy.
deploy-tools: $(TOOLS)/bin/helm $(TOOLS)/checkov/bin/checkov $(TOOLS)/cyclonedx/bin/cyclonedx-py

$(TOOLS)/bin/helm:
	GOBIN=$(CURDIR)/$(TOOLS)/bin go install helm.sh/helm/v3/cmd/helm@v3.22.0

$(TOOLS)/checkov/bin/checkov:
	$(PYTHON) -m venv $(TOOLS)/checkov && $(TOOLS)/checkov/bin/pip install -q checkov==3.3.30

$(TOOLS)/cyclonedx/bin/cyclonedx-py: deploy/sbom-requirements.txt
	$(PYTHON) -m venv $(TOOLS)/cyclonedx && $(TOOLS)/cyclonedx/bin/pip install -q --only-binary=:all: \
		--requirement deploy/sbom-requirements.txt
	touch $@

NATIVE := detectors/native/Cargo.toml

lint:
	$(PYTHON) -m ruff check detectors service devservices tests bench
	@if command -v cargo >/dev/null; then \
		cargo fmt --check --manifest-path $(NATIVE) && cargo clippy -q --release --manifest-path $(NATIVE) -- -D warnings; \
	else echo "cargo not found: the native screen is not linted (nor built)"; fi

typecheck:
	$(PYTHON) -m mypy

test: install-dev system-packages servers-fetch deploy-tools lint typecheck
	@if command -v cargo >/dev/null; then \
		cargo test -q --release --manifest-path $(NATIVE); \
	else echo "cargo not found: the native screen's unit tests are not run"; fi
	$(PYTHON) -m pytest -q -p no:cacheprovider

run: install
	pipesentry run

demo: install
	pipesentry demo

bench: install-dev servers-fetch
	$(PYTHON) bench/engine.py --json
