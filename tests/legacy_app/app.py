"""A stand-in of the Construction AI Suite's legacy Flask API, for sitegate's
end-to-end tests. It mimics the suite's endpoints and its failure modes; it has none of
the suite's own hardening, which is the point: sitegate supplies that at the edge.

Run: python app.py [--port N]   (port 0 picks a free one; the bound port is printed
as "LISTENING <port>" on stdout once the socket is open).
"""

import argparse
import hashlib
import sys
import time

from flask import Flask, Response, jsonify, request
from werkzeug.serving import make_server

app = Flask(__name__)


@app.get("/health")
def health():
    return jsonify(status="healthy", service="construction-ai-suite", flask=True)


@app.post("/api/phase9/intelligence")
def phase9():
    body = request.get_json(silent=True) or {}
    return jsonify(
        project_id=body.get("project_id"),
        risk_score=0.37,
        delay_risk="medium",
        recommendations=["add a buffer to the concrete pour schedule"],
        phase=9,
    )


@app.post("/api/phase12/delay-prediction")
def phase12():
    body = request.get_json(silent=True) or {}
    return jsonify(project_id=body.get("project_id"), predicted_delay_days=12, phase=12)


@app.post("/api/phase13/budget-forecast")
def phase13():
    body = request.get_json(silent=True) or {}
    budget = float(body.get("budget") or 0)
    return jsonify(project_id=body.get("project_id"), forecast_total=budget * 1.08, phase=13)


@app.post("/models/<name>/<version>/predict")
def predict(name, version):
    return jsonify(model=name, version=version, prediction={"delay_days": 9})


@app.post("/models/<name>/retrain")
def retrain(name):
    return jsonify(model=name, status="retraining started"), 202


@app.get("/api/fail")
def fail():
    return jsonify(error="Internal Server Error", detail="the prediction service crashed"), 500


@app.get("/api/slow")
def slow():
    ms = min(int(request.args.get("ms", "3000")), 120000)
    time.sleep(ms / 1000)
    return jsonify(status="finally", slept_ms=ms)


@app.get("/api/text")
def text():
    # A legacy endpoint that answers plain text where its clients expect JSON.
    return Response("OK\n", mimetype="text/plain")


@app.get("/api/leak")
def leak():
    # AWS's documented example key: fake by design.
    return jsonify(status="ok", debug={"aws_access_key_id": "AKIAIOSFODNN7EXAMPLE"})


@app.post("/api/reflect")
def reflect():
    # What a careless debug endpoint does: echo what it was given, nested, as JSON.
    text = request.get_data(as_text=True)
    return jsonify(status="ok", debug={"nested": {"deep": [text]}, "config": text})


@app.post("/api/reflect.txt")
def reflect_text():
    return Response(request.get_data(), mimetype="text/plain")


@app.post("/sha256")
def sha256():
    h = hashlib.sha256()
    n = 0
    stream = request.stream
    while True:
        chunk = stream.read(65536)
        if not chunk:
            break
        h.update(chunk)
        n += len(chunk)
    return jsonify(sha256=h.hexdigest(), bytes=n)


@app.route("/headers", methods=["GET", "POST"])
def headers():
    return jsonify({k.lower(): v for k, v in request.headers.items()})


@app.get("/raw")
def raw():
    # Headers the proxy must pass through untouched, and odd bytes in the body.
    resp = Response(b"line one\r\nline two\x00\xff", mimetype="application/octet-stream")
    resp.headers["X-Legacy-Header"] = "kept"
    resp.set_cookie("session", "abc123")
    return resp


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args()
    server = make_server("127.0.0.1", args.port, app, threaded=True)
    print(f"LISTENING {server.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
