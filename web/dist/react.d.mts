export * from "./types/react.js";
export { default } from "./types/react.js";
