// pinedge sample origin: count loaded images; like a pin through the JSON API.
"use strict";

function countLoaded() {
  const out = document.getElementById("loaded");
  const images = Array.from(document.querySelectorAll("main img"));
  if (!out || images.length === 0) return;
  const show = () => {
    const done = images.filter((img) => img.complete && img.naturalWidth > 0).length;
    out.textContent = `${done}/${images.length} images loaded`;
  };
  // The blurred placeholder behind an image goes once the image is in, so it
  // never shows through transparent pixels.
  const clear = (img) => { img.style.backgroundImage = "none"; };
  images.forEach((img) => {
    if (img.complete && img.naturalWidth > 0) clear(img);
    img.addEventListener("load", () => { clear(img); show(); });
  });
  show();
}

function likes() {
  const button = document.querySelector("button.like");
  if (!button) return;
  const api = button.dataset.api;
  const count = document.getElementById("likes");
  const show = (pin) => { count.textContent = `${pin.likes} likes`; };
  fetch(api).then((r) => r.json()).then(show).catch(() => {});
  button.addEventListener("click", () => {
    fetch(`${api}/likes`, { method: "POST" }).then((r) => r.json()).then(show).catch(() => {});
  });
}

document.addEventListener("DOMContentLoaded", () => { countLoaded(); likes(); });
