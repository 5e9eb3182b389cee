// StudioOps console: the one thing htmx does not do for us — upload a file straight to S3 through a presigned
// PUT URL, with progress. The console only signs the URL (POST with the CSRF token); the bytes never pass
// through it.
"use strict";

function uploadFile(form) {
  const input = form.querySelector('input[type="file"]');
  const bar = form.querySelector("progress");
  const status = form.querySelector(".status");
  const file = input.files[0];
  if (!file) return;
  const key = form.dataset.prefix + file.name;
  const body = new URLSearchParams({ bucket: form.dataset.bucket, key: key });
  status.textContent = "Signing…";
  fetch("/api/console/storage/upload-url", {
    method: "POST",
    headers: { "X-CSRF-Token": form.dataset.csrf, "Content-Type": "application/x-www-form-urlencoded" },
    body: body,
    credentials: "same-origin",
  })
    .then((r) => r.json().then((data) => {
      if (!r.ok) throw new Error(data.detail || r.statusText);
      return data;
    }))
    .then((data) => new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("PUT", data.url);
      xhr.upload.onprogress = (e) => {
        if (e.lengthComputable) {
          bar.value = Math.round((e.loaded / e.total) * 100);
          status.textContent = bar.value + "%";
        }
      };
      xhr.onload = () => (xhr.status < 300 ? resolve() : reject(new Error("S3 answered " + xhr.status)));
      xhr.onerror = () => reject(new Error("the S3 endpoint did not answer"));
      bar.hidden = false;
      bar.value = 0;
      xhr.send(file);
    }))
    .then(() => {
      status.textContent = "Uploaded " + key;
      form.dataset.done = key;
      window.location.reload();
    })
    .catch((err) => {
      status.textContent = "Upload failed: " + err.message;
      status.classList.add("error");
    });
}

document.addEventListener("submit", (event) => {
  if (event.target.id === "upload") {
    event.preventDefault();
    uploadFile(event.target);
  }
});
