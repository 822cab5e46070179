"""MLServer runtime for a CatBoost *regressor* (the stock mlserver-catboost one loads every
model as a CatBoostClassifier). Otherwise it is the stock runtime: decode the request with
MLServer's codecs (a pandas request arrives as a DataFrame), predict, encode with NumpyCodec.
thread_count=1 because every server in the benchmark gets one core."""

from catboost import CatBoostRegressor
from mlserver import types
from mlserver.codecs import NumpyCodec, NumpyRequestCodec
from mlserver.utils import get_model_uri
from mlserver_catboost import CatboostModel
from mlserver_catboost.catboost import WELLKNOWN_MODEL_FILENAMES


class CatBoostRegressorRuntime(CatboostModel):
    async def load(self) -> bool:
        uri = await get_model_uri(self._settings, wellknown_filenames=WELLKNOWN_MODEL_FILENAMES)
        self._model = CatBoostRegressor()
        self._model.load_model(uri)
        self.ready = True
        return self.ready

    async def predict(self, payload: types.InferenceRequest) -> types.InferenceResponse:
        decoded = self.decode_request(payload, default_codec=NumpyRequestCodec)
        prediction = self._model.predict(decoded, thread_count=1)
        return types.InferenceResponse(
            model_name=self.name, model_version=self.version,
            outputs=[NumpyCodec.encode_output(name="predict", payload=prediction)])
