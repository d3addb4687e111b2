// Routes of OpenAI's fine-tuning API that this server does not offer, answered with a 404 that
// names what is missing instead of the generic "Unrecognized request URL".
import type { FastifyInstance } from "fastify";
import { ApiError } from "../errors.js";

const GRADERS =
  "Graders (/v1/fine_tuning/alpha/graders/*) are not supported by this server: they serve reinforcement fine-tuning (method.type 'reinforcement'), which it does not offer.";

export function registerUnsupportedFineTuningRoutes(app: FastifyInstance): void {
  for (const action of ["run", "validate"]) {
    app.post(`/v1/fine_tuning/alpha/graders/${action}`, async () => {
      throw ApiError.notFound(GRADERS, null, "unsupported_feature");
    });
  }
}
